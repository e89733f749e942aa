fleet "db" {
  image = "postgres:16"
  front = "tcp"
  health "tcp" {
    port = 5432
  }
}
