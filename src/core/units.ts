/** Byte units, defined once. Binary multiples: a GiB is 1024 ** 3 bytes. */
export const KIB = 1024;
export const MIB = 1024 ** 2;
export const GIB = 1024 ** 3;
