# hello 1.2.0 with a failing /healthz: a rollout to it must never take traffic.
image "hello" {
  version = "1.2.0"
  base {
    image = "hello:1.1.0"
  }
  memory = "512M"
  provision "shell" {
    inline = [
      "sed -i 's/^APP_VERSION=.*/APP_VERSION=1.2.0/' /etc/hello/hello.env",
      "echo HEALTHY=false >> /etc/hello/hello.env",
    ]
  }
}
