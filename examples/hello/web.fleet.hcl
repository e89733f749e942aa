# Two instances of hello behind 127.0.0.1:8080:  kiln fleet up -f examples/hello/web.fleet.hcl
variable "version" { default = "1.0.0" }

fleet "web" {
  image  = "hello:${var.version}"
  count  = 2
  memory = "512M"
  port {
    host  = 8080
    guest = 8080
  }
  health "http" {
    path     = "/healthz"
    interval = "2s"
  }
}
