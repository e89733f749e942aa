version = "3.0.0"
count   = 4
