fleet "web" {
  image = "hello:1.0.0"
  health "exec" {
    comand = "true"
  }
}
