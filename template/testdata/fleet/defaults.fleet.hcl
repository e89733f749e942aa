fleet "web" {
  image = "hello"
}
