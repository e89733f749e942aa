fleet "web" {
  image = "hello:1.0.0"
  health "exec" {
    timeout = "5s"
  }
}
