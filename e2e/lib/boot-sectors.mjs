// Tiny x86 real-mode guests for QEMU, each a 512-byte boot sector (0x55 0xAA at offset 510)
// that SeaBIOS loads at 0000:7C00 from an IDE disk image. They are hand-assembled below, one
// instruction a line with its assembly as the comment; `assemble` only resolves the labels
// (8-bit and 16-bit relative jumps, absolute addresses in the sector). Used by
// record-traffic.mjs to give the console realistic text-mode traffic:
//   - echoGuest: clears the screen, prints a banner and a `lab$ ` prompt, then echoes every key
//     it reads (Enter starts a new line with a fresh prompt), like an idle shell;
//   - scrollGuest: prints a build log forever, one distinct line (a counter and a rotating file
//     name) every ~50 ms, so the text screen scrolls like a terminal running `make`.
// Disassemble a sector with `objdump -D -b binary -mi8086 --adjust-vma=0x7c00 FILE`.

const ORIGIN = 0x7c00;
const SECTOR_BYTES = 512;

const label = (name) => ({ label: name });
const data = (text) => ({ bytes: [...Buffer.from(text, 'latin1')] });

/**
 * Lays out `items` (`label(name)`, `data(text)`, or `[bytes, assembly, ...references]` where
 * each reference `{ rel8 | rel16 | abs16: name }` is appended, in order, after the bytes) at
 * 0x7C00 and returns the 512-byte boot sector.
 */
function assemble(items) {
  const sizeOf = (reference) => (reference.rel8 ? 1 : 2);
  const instructionSize = ([bytes, , ...references]) =>
    references.reduce((size, reference) => size + sizeOf(reference), bytes.length);
  const labels = new Map();
  let offset = 0;
  for (const item of items) {
    if (item.label) {
      labels.set(item.label, offset);
    } else if (item.bytes) {
      offset += item.bytes.length;
    } else {
      offset += instructionSize(item);
    }
  }
  if (offset > SECTOR_BYTES - 2) {
    throw new Error(`boot sector code is ${offset} bytes, more than ${SECTOR_BYTES - 2}`);
  }
  const sector = Buffer.alloc(SECTOR_BYTES);
  offset = 0;
  const target = (name) => {
    if (!labels.has(name)) {
      throw new Error(`unknown label ${name}`);
    }
    return labels.get(name);
  };
  for (const item of items) {
    if (item.label) {
      continue;
    }
    const [bytes, , ...references] = item.bytes ? [item.bytes] : item;
    sector.set(bytes, offset);
    offset += bytes.length;
    for (const reference of references) {
      const end = offset + sizeOf(reference);
      if (reference.rel8) {
        const distance = target(reference.rel8) - end;
        if (distance < -128 || distance > 127) {
          throw new Error(`jump to ${reference.rel8} is out of 8-bit range`);
        }
        sector.writeInt8(distance, offset);
      } else if (reference.rel16) {
        sector.writeInt16LE(target(reference.rel16) - end, offset);
      } else {
        sector.writeUInt16LE(ORIGIN + target(reference.abs16), offset);
      }
      offset = end;
    }
  }
  sector.writeUInt16LE(0xaa55, SECTOR_BYTES - 2);
  return sector;
}

/** The start both guests share: CS:IP, DS and the direction flag known, an empty 80x25 screen. */
const prologue = [
  [[0xea, 0x05, 0x7c, 0x00, 0x00], 'jmp 0000h:7C05h     ; CS = 0 whichever way the BIOS jumped here'],
  [[0x31, 0xc0], 'xor ax, ax'],
  [[0x8e, 0xd8], 'mov ds, ax          ; DS = 0: labels are 7Cxxh addresses'],
  [[0xfc], 'cld                 ; lodsb counts upwards'],
  [[0xfb], 'sti                 ; int 15h/86h waits on the RTC interrupt'],
  [[0xb8, 0x03, 0x00], 'mov ax, 0003h'],
  [[0xcd, 0x10], 'int 10h             ; 80x25 colour text mode, screen cleared'],
  [[0xbb, 0x07, 0x00], 'mov bx, 0007h       ; teletype page 0, light grey'],
];

/** `puts`: teletypes the NUL-terminated text at DS:SI; returns with SI after the NUL. */
const puts = [
  label('puts'),
  [[0xac], 'lodsb'],
  [[0x84, 0xc0], 'test al, al'],
  [[0x74], 'jz puts_done', { rel8: 'puts_done' }],
  [[0xb4, 0x0e], 'mov ah, 0Eh'],
  [[0xcd, 0x10], 'int 10h             ; teletype AL'],
  [[0xeb], 'jmp puts', { rel8: 'puts' }],
  label('puts_done'),
  [[0xc3], 'ret'],
];

/** The echo guest's boot sector (see the header). */
export function echoGuest() {
  return assemble([
    ...prologue,
    [[0xbe], 'mov si, banner', { abs16: 'banner' }],
    [[0xe8], 'call puts', { rel16: 'puts' }],
    label('prompt'),
    [[0xbe], 'mov si, prompt_text', { abs16: 'prompt_text' }],
    [[0xe8], 'call puts', { rel16: 'puts' }],
    label('read'),
    [[0xb4, 0x00], 'mov ah, 00h'],
    [[0xcd, 0x16], 'int 16h             ; wait for a key: AL = its ASCII code'],
    [[0xb4, 0x0e], 'mov ah, 0Eh'],
    [[0x50], 'push ax'],
    [[0xcd, 0x10], 'int 10h             ; echo it'],
    [[0x58], 'pop ax'],
    [[0x3c, 0x0d], 'cmp al, 0Dh'],
    [[0x75], 'jne read            ; not Enter: next key', { rel8: 'read' }],
    [[0xb0, 0x0a], 'mov al, 0Ah'],
    [[0xcd, 0x10], 'int 10h             ; Enter: line feed too (AH is still 0Eh)'],
    [[0xeb], 'jmp prompt', { rel8: 'prompt' }],
    ...puts,
    label('banner'),
    data('ws-proxy traffic lab: echo guest (QEMU, SeaBIOS, 80x25 text)\r\n\r\n\0'),
    label('prompt_text'),
    data('lab$ \0'),
  ]);
}

/** The scroll guest's boot sector (see the header). */
export function scrollGuest() {
  return assemble([
    ...prologue,
    [[0xc7, 0x06], 'mov word [next_name], names', { abs16: 'next_name' }, { abs16: 'names' }],
    label('line'),
    [[0xbe], 'mov si, line_prefix  ; "[00042] CC  "', { abs16: 'line_prefix' }],
    [[0xe8], 'call puts', { rel16: 'puts' }],
    [[0x8b, 0x36], 'mov si, [next_name]', { abs16: 'next_name' }],
    [[0xe8], 'call puts           ; the file name; SI is now after its NUL', { rel16: 'puts' }],
    [[0x80, 0x3c, 0x00], 'cmp byte [si], 0    ; an empty name ends the table'],
    [[0x75], 'jne keep', { rel8: 'keep' }],
    [[0xbe], 'mov si, names', { abs16: 'names' }],
    label('keep'),
    [[0x89, 0x36], 'mov [next_name], si', { abs16: 'next_name' }],
    [[0xbe], 'mov si, line_suffix', { abs16: 'line_suffix' }],
    [[0xe8], 'call puts', { rel16: 'puts' }],
    [[0xbf], 'mov di, last_digit', { abs16: 'last_digit' }],
    label('carry'),
    [[0xfe, 0x05], 'inc byte [di]'],
    [[0x80, 0x3d, 0x3a], "cmp byte [di], '9'+1"],
    [[0x75], 'jne pause', { rel8: 'pause' }],
    [[0xc6, 0x05, 0x30], "mov byte [di], '0'"],
    [[0x4f], 'dec di              ; carry into the next digit'],
    [[0xeb], 'jmp carry', { rel8: 'carry' }],
    label('pause'),
    [[0xb4, 0x86], 'mov ah, 86h'],
    [[0x31, 0xc9], 'xor cx, cx'],
    [[0xba, 0x50, 0xc3], 'mov dx, 0C350h      ; CX:DX = 50 000 us'],
    [[0xcd, 0x15], 'int 15h             ; wait'],
    [[0xeb], 'jmp line', { rel8: 'line' }],
    ...puts,
    label('next_name'),
    data('\0\0'),
    label('line_prefix'),
    data('[0000'),
    label('last_digit'),
    data('0] CC  \0'),
    label('line_suffix'),
    data(' -O2 -Wall -fPIC -c\r\n\0'),
    label('names'),
    data('drivers/net/virtio_net.o\0'),
    data('fs/ext4/inode.o\0'),
    data('kernel/sched/fair.o\0'),
    data('mm/page_alloc.o\0'),
    data('net/ipv4/tcp_output.o\0'),
    data('lib/zlib_deflate/deflate.o\0'),
    data('arch/x86/kvm/vmx/vmx.o\0'),
    data('\0'),
  ]);
}
