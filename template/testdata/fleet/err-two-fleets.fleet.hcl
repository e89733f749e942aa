fleet "web" {
  image = "hello:1.0.0"
}

fleet "api" {
  image = "api:1.0.0"
}
