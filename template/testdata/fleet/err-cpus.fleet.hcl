fleet "web" {
  image = "hello:1.0.0"
  cpus  = 0
}
