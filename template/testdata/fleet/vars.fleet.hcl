variable "version" {
  default = "1.0.0"
}

variable "count" {
  type    = number
  default = 2
}

fleet "web" {
  image = "hello:${var.version}"
  count = var.count
}
