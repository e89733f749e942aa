fleet "web" {
  imgae = "hello:1.0.0"
}
