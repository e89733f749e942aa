fleet "Web" {
  count  = 0
  memory = "lots"
  port {
    host  = 8080
    guest = 80
  }
  port {
    host  = 8080
    guest = 80
  }
  health "tcp" {
    failures = 0
  }
}
