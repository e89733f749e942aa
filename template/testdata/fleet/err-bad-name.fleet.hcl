fleet "Web_Servers" {
  image = "hello:1.0.0"
}
