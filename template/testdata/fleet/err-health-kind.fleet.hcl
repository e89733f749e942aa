fleet "web" {
  image = "hello:1.0.0"
  health "htp" {
    path = "/healthz"
  }
}
