fleet "web" {
  image = "hello:1.0.0"
  front = "https"
}
