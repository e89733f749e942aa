fleet "web" {
  image =
}
