fleet "web" {
  image = "hello:1.0.0"
  health "tcp" {
    interval = "1s"
  }
}
