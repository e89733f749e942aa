variable "version" {
  default = "1.0.0"
}
