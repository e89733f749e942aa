fleet "worker" {
  image = "worker:2"
  count = 4
  health "exec" {
    command  = "systemctl is-active worker"
    interval = "10s"
  }
}
