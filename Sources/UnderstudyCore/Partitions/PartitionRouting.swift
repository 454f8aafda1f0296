/// The stable, language-independent function from a key to its partition: **FNV-1a 64** of the key's bytes
/// (UTF-8 for text), modulo P.
///
/// FNV-1a 64: start from the offset basis 0xcbf29ce484222325; for each byte, XOR it in, then multiply by the prime
/// 0x100000001b3 modulo 2⁶⁴. Test vectors (docs/partitions.md has more): `""` → 0xcbf29ce484222325,
/// `"a"` → 0xaf63dc4c8601ec8c, `"foobar"` → 0x85944171f73967e8. A client in any language computes the same
/// partition and sends the request to its owner.
public enum PartitionRouting {
    public static let offsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325
    public static let prime: UInt64 = 0x0000_0100_0000_01b3

    /// FNV-1a 64 of `bytes`.
    public static func fnv1a64(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var hash = offsetBasis
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= prime
        }
        return hash
    }

    /// The partition (0 ..< `count`) of `key`.
    public static func partition(of key: String, count: Int) -> Int {
        partition(ofBytes: Array(key.utf8), count: count)
    }

    /// The partition (0 ..< `count`) of a key given as bytes.
    public static func partition(ofBytes key: some Sequence<UInt8>, count: Int) -> Int {
        Int(fnv1a64(key) % UInt64(max(1, count)))
    }
}
