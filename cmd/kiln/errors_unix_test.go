package main

import "syscall"

func syscallMkfifo(path string) error { return syscall.Mkfifo(path, 0o600) }

// syscallMknodNull makes a character device like /dev/null (1, 3) at path,
// in a test's own folder: the real /dev is never touched.
func syscallMknodNull(path string) error { return syscall.Mknod(path, syscall.S_IFCHR|0o666, (1<<8)|3) }
