fleet "web" {
  count = 2
}
