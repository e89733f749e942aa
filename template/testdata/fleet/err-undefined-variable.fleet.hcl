variable "version" {
  default = "1.0.0"
}

fleet "web" {
  image = "hello:${var.versoin}"
}
