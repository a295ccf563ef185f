// zlib's CRC-32: the checksum of checkpoint tensor data (Python checks it with zlib.crc32).
#include <zlib.h>
