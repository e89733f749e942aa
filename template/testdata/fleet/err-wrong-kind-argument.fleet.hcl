fleet "web" {
  image = "hello:1.0.0"
  health "exec" {
    command = "true"
    path    = "/healthz"
    port    = 8080
  }
}
