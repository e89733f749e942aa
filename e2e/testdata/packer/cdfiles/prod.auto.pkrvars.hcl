memory = 768
