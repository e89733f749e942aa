fleet "web" {
  image = "hello:1.0.0"
  port {
    host = 8080
  }
}
