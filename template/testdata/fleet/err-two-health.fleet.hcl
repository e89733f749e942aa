fleet "web" {
  image = "hello:1.0.0"
  health "tcp" {
    port = 22
  }
  health "tcp" {
    port = 80
  }
}
