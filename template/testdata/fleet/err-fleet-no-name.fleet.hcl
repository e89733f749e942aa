fleet {
  image = "hello:1.0.0"
}
