fleet "web" {
  image = "hello:1.0.0"
  health "tcp" {
    port     = 22
    interval = "2 seconds"
    delay    = "-1s"
  }
}
