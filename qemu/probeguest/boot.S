# The accelerator probe's guest: a boot sector that SeaBIOS loads at 0x7c00.
#
# It proves that an accelerator really runs guest code, which opening
# /dev/kvm or creating a VM does not: real-mode code writes to the serial
# port, the CPU takes a timer interrupt, switches to protected mode and
# leaves QEMU through isa-debug-exit (iobase 0xf4) with exit status
# (0x10 << 1) | 1 = 33. Each stage prints a line first, so a probe that stops
# halfway says how far the guest got.
#
# Rebuild boot.bin (go generate ./qemu does this; a test checks it matches):
#   as --32 -o boot.o boot.S
#   ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o boot.bin boot.o
	.code16
	.text
	.globl _start
_start:
	cli
	xorw %ax, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw $0x7c00, %sp
	ljmp $0, $real              # some BIOSes enter at 07c0:0000

real:
	movw $msg_real, %si
	call puts16

	# IRQ0 is vector 8 as every BIOS programs the PIC: hook it, unmask it
	# and run the PIT at 100 Hz, then wait for one tick.
	movw $tick, 8*4
	movw $0, 8*4+2
	inb $0x21, %al
	andb $0xfe, %al
	outb %al, $0x21
	movb $0x34, %al             # channel 0, lobyte/hibyte, rate generator
	outb %al, $0x43
	movw $11932, %ax            # 1193182 Hz / 100
	outb %al, $0x40
	movb %ah, %al
	outb %al, $0x40
	sti
wait_tick:
	hlt
	cmpb $0, ticked
	je wait_tick
	cli
	movw $msg_irq, %si
	call puts16

	lgdt gdtr
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmp $0x08, $protected

tick:
	pushw %ax
	movb $1, %cs:ticked
	movb $0x20, %al             # end of interrupt
	outb %al, $0x20
	popw %ax
	iret

# puts16 writes the NUL-terminated string at %si to COM1.
puts16:
	lodsb
	testb %al, %al
	jz 2f
	movb %al, %ah
	movw $0x3fd, %dx
1:	inb %dx, %al
	testb $0x20, %al            # transmitter holding register empty
	jz 1b
	movw $0x3f8, %dx
	movb %ah, %al
	outb %al, %dx
	jmp puts16
2:	ret

	.code32
protected:
	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movl $msg_pm, %esi
3:	lodsb
	testb %al, %al
	jz 5f
	movb %al, %ah
	movw $0x3fd, %dx
4:	inb %dx, %al
	testb $0x20, %al
	jz 4b
	movw $0x3f8, %dx
	movb %ah, %al
	outb %al, %dx
	jmp 3b
5:	movb $0x10, %al
	outb %al, $0xf4             # isa-debug-exit: QEMU exits with 33
halt:
	hlt
	jmp halt

ticked:	.byte 0
msg_real:	.asciz "kiln-probe: real mode\r\n"
msg_irq:	.asciz "kiln-probe: interrupt\r\n"
msg_pm:	.asciz "kiln-probe: protected mode\r\n"

	.p2align 3
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff    # 0x08: code, base 0, 4 GiB, 32-bit
	.quad 0x00cf92000000ffff    # 0x10: data, base 0, 4 GiB
gdtr:
	.word gdtr - gdt - 1
	.long gdt

	.org 510
	.word 0xaa55
