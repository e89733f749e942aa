fleet "db" {
  image = "postgres:16"
  health "tcp" {
    port = 5432
  }
}
