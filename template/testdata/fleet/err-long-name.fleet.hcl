fleet "a-fleet-name-that-is-much-too-long" {
  image = "hello:1.0.0"
}
