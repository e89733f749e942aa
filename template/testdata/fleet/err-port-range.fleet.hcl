fleet "web" {
  image = "hello:1.0.0"
  port {
    host  = 0
    guest = 65536
  }
}
