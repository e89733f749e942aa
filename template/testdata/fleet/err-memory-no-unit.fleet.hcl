fleet "web" {
  image  = "hello:1.0.0"
  memory = "2048"
}
