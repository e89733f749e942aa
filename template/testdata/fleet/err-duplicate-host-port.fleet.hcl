fleet "web" {
  image = "hello:1.0.0"
  port {
    host  = 8080
    guest = 80
  }
  port {
    host  = 8080
    guest = 81
  }
}
