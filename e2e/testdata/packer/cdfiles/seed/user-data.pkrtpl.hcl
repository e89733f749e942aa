#cloud-config
users:
  - name: packer
    shell: /bin/bash
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    lock_passwd: true
    ssh_authorized_keys:
      - ${ssh_key}
ssh_pwauth: false
