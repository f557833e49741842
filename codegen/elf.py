"""Structural checks of ELF files before a loader that trusts their fields sees them.

Two loaders read graphc's ELF files: LLVM's object loader (cached relocatable objects, see
graphc/cache.py) and the system's dynamic loader (``graphc.load`` of an exported shared
library, see runtime/library.py). Both map or copy the ranges the headers name without
checking them against the file's length, so a truncated or damaged file ends the process
(SIGBUS or SIGSEGV) instead of raising. These functions read only the headers and tables
(layout from the System V ABI, "ELF-64 Object File Format" and the gABI's ELF32 tables) and
say what is wrong, or None.
"""

from __future__ import annotations

import struct
import sys
import zlib

__all__ = ["checksum_problem", "elf_problem", "shared_object_problem", "with_checksum"]

# graphc's exported shared libraries end with this trailer: a 12-byte tag and the CRC-32
# (zlib's, little-endian) of every byte before it. Bytes past the last section are ignored by
# linkers and the dynamic loader; ``strip`` and the like drop them (then nothing is checked).
CHECKSUM_TAG = b"graphc-crc32"
CHECKSUM_BYTES = len(CHECKSUM_TAG) + 4

ET_REL, ET_DYN = 1, 3
PT_LOAD, PT_DYNAMIC = 1, 2
SHT_SYMTAB, SHT_RELA, SHT_NOBITS, SHT_REL, SHT_DYNSYM = 2, 4, 8, 9, 11


def _header(data: bytes) -> tuple[str, bool] | str:
    """(struct byte-order prefix, is ELF64) from the identification bytes, or the problem."""
    if len(data) < 52 or data[:4] != b"\x7fELF":
        return "no ELF header (not an ELF file, or cut off before its first 64 bytes)"
    if data[4] not in (1, 2) or data[5] not in (1, 2):
        return f"unknown ELF class {data[4]} or data encoding {data[5]}"
    if data[4] == 2 and len(data) < 64:
        return "ELF header cut off"
    return ("<" if data[5] == 1 else ">"), data[4] == 2


def shared_object_problem(data: bytes, machine: int | None = None) -> str | None:
    """Why ``data`` is not a well-formed ELF shared object for this host, or None.

    Checked: the ELF header (class and byte order of this Python, type ET_DYN, ``machine`` as
    e_machine when given), the program header table inside the file, every PT_LOAD segment's
    file range inside the file and no larger than its memory size, a PT_DYNAMIC segment inside
    the file, and the section header table and every section (but NOBITS) inside the file.

    Args:
        data: the whole file's bytes.
        machine: the ELF e_machine number this host runs (None: not checked).
    """
    head = _header(data)
    if isinstance(head, str):
        return head
    bo, is64 = head
    if is64 != (sys.maxsize > 2**32) or bo != ("<" if sys.byteorder == "little" else ">"):
        bits, order = ("64" if is64 else "32"), ("little" if bo == "<" else "big")
        return f"a {bits}-bit {order}-endian ELF file, not this machine's kind"
    if is64:
        fields = struct.unpack_from(bo + "HHIQQQIHHHHHH", data, 16)
        phfmt, phsize, shfmt, shsize = bo + "IIQQQQQQ", 56, bo + "IIQQQQIIQQ", 64
    else:
        fields = struct.unpack_from(bo + "HHIIIIIHHHHHH", data, 16)
        phfmt, phsize, shfmt, shsize = bo + "IIIIIIII", 32, bo + "IIIIIIIIII", 40
    e_type, e_machine, _, _, e_phoff, e_shoff, _, _, e_phentsize, e_phnum = fields[:10]
    e_shentsize, e_shnum, e_shstrndx = fields[10:]
    n = len(data)
    if e_type != ET_DYN:
        return f"ELF type {e_type}, not a shared object (ET_DYN)"
    if machine is not None and e_machine != machine:
        return f"built for ELF machine {e_machine}, this machine is {machine}"
    if e_phnum == 0 or e_phentsize != phsize:
        return "no program header table"
    if e_phoff > n or e_phoff + e_phnum * phsize > n:
        return f"program header table (offset {e_phoff}, {e_phnum} entries) past the end"
    dynamic = False
    for i in range(e_phnum):
        p = struct.unpack_from(phfmt, data, e_phoff + i * phsize)
        if is64:
            p_type, off, filesz, memsz = p[0], p[2], p[5], p[6]
        else:
            p_type, off, filesz, memsz = p[0], p[1], p[4], p[5]
        if p_type in (PT_LOAD, PT_DYNAMIC) and (off > n or filesz > n - off):
            what = "loadable segment" if p_type == PT_LOAD else "dynamic segment"
            return f"{what} {i} (bytes {off}..{off + filesz}) past the end of the file ({n} bytes)"
        if p_type == PT_LOAD and filesz > memsz:
            return f"loadable segment {i} larger in the file than in memory"
        dynamic = dynamic or (p_type == PT_DYNAMIC and filesz > 0)
    if not dynamic:
        return "no dynamic section"
    if e_shnum:
        if e_shentsize != shsize or e_shoff > n or e_shoff + e_shnum * shsize > n:
            return f"section header table (offset {e_shoff}, {e_shnum} entries) past the end"
        if e_shstrndx >= e_shnum:
            return f"section name table index {e_shstrndx} of {e_shnum} sections"
        for i in range(e_shnum):
            s = struct.unpack_from(shfmt, data, e_shoff + i * shsize)
            typ, off, size = s[1], s[4], s[5]
            if typ != SHT_NOBITS and (off > n or size > n - off):
                return f"section {i} (bytes {off}..{off + size}) past the end of the file"
    return None


def elf_problem(obj: bytes) -> str | None:
    """Why ``obj`` is not a well-formed little-endian ELF64 relocatable file, or None.

    Checked before LLVM's loader sees it (it trusts these fields): the ELF header, the section
    table and every section inside the file, section links, symbol names and section indexes,
    and every relocation's symbol index and offset inside its target section.
    """
    if len(obj) < 64 or obj[:4] != b"\x7fELF":
        return "no ELF header"
    if obj[4] != 2 or obj[5] != 1:
        return "not little-endian ELF64"
    e_type, _, _, _, _, e_shoff, _, e_ehsize, _, _, e_shentsize, e_shnum, e_shstrndx = (
        struct.unpack_from("<HHIQQQIHHHHHH", obj, 16)
    )
    if e_type != ET_REL or e_ehsize != 64 or e_shentsize != 64 or not 0 < e_shnum < 0xFF00:
        return "not a relocatable object"
    if e_shoff < 64 or e_shoff + 64 * e_shnum > len(obj) or e_shstrndx >= e_shnum:
        return "section table outside the file"
    secs = [struct.unpack_from("<IIQQQQIIQQ", obj, e_shoff + 64 * i) for i in range(e_shnum)]
    for i, (_, typ, _, _, off, size, link, _info, _, entsize) in enumerate(secs):
        if typ != SHT_NOBITS and (off > len(obj) or size > len(obj) - off):
            return f"section {i} outside the file"
        if link >= e_shnum:
            return f"section {i} links to section {link}"
        if typ in (SHT_SYMTAB, SHT_RELA, SHT_DYNSYM) and (entsize != 24 or size % 24):
            return f"section {i} has entries of {entsize} bytes"
        if typ == SHT_REL:  # not emitted for our targets
            return f"section {i} holds REL relocations"
    for i, (_, typ, _, _, off, size, link, info, _, _) in enumerate(secs):
        if typ == SHT_SYMTAB:
            strsize = secs[link][5]
            for name, _, _, shndx, _, _ in struct.iter_unpack("<IBBHQQ", obj[off : off + size]):
                if name >= max(strsize, 1) or (shndx >= e_shnum and shndx < 0xFF00):
                    return f"symbol table {i} has a bad entry"
        elif typ == SHT_RELA:
            if secs[link][1] != SHT_SYMTAB or info >= e_shnum:
                return f"relocation section {i} has a bad symbol table or target"
            nsyms, target = secs[link][5] // 24, secs[info][5]
            for r_off, r_info, _ in struct.iter_unpack("<QQq", obj[off : off + size]):
                if r_info >> 32 >= nsyms or r_off >= target:
                    return f"relocation section {i} has a bad entry"
    return None


def with_checksum(data: bytes) -> bytes:
    """``data`` (a linked shared library) followed by graphc's checksum trailer."""
    return data + CHECKSUM_TAG + struct.pack("<I", zlib.crc32(data))


def checksum_problem(data: bytes) -> str | None:
    """Why the checksum trailer of ``data`` does not match its bytes, or None (it matches,
    or the file has no trailer: made before graphc wrote one, or stripped since)."""
    if len(data) < CHECKSUM_BYTES or data[-CHECKSUM_BYTES:-4] != CHECKSUM_TAG:
        return None
    (want,) = struct.unpack("<I", data[-4:])
    got = zlib.crc32(data[:-CHECKSUM_BYTES])
    if got != want:
        return f"its CRC-32 is {got:08x}, written at export as {want:08x} (a changed byte)"
    return None
