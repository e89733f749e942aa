fleet "web" {
  image = "Hello:1.0.0"
}
