fleet "web" {
  image = "hello:1.0.0"
  port {
    host  = 8080
    guest = 8080
  }
  health "http" {
    interval = "1s"
  }
}
