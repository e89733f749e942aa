variable "image_url" {
  type        = string
  description = "The Debian 12 genericcloud qcow2 to start from."
  default     = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"

  validation {
    condition     = can(regex("^https?://", var.image_url))
    error_message = "The image_url must be an http or https URL."
  }
}

variable "version" {
  type    = string
  default = "1.0.0"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.version))
    error_message = "The version must look like 1.2.3."
  }
}

variable "ssh_private_key_file" {
  type        = string
  description = "Key whose public half (the .pub beside it) goes into the seed."
}

variable "memory" {
  type    = number
  default = 1024
}

variable "tags" {
  type    = map(string)
  default = { team = "platform" }
}
