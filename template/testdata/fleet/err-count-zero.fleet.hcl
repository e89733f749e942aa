fleet "web" {
  image = "hello:1.0.0"
  count = 0
}
