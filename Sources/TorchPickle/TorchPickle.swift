/// Reads PyTorch `torch.save` files (zip and legacy formats) without executing anything.
///
/// Open a file with ``TorchFile``; ``parse(_:file:limits:)`` reads a standalone pickle that
/// holds no tensors. Both run the same restricted pickle machine: only the globals in the
/// allow-list (tensor rebuild functions, storage types, OrderedDict and a few plain-value
/// spellings, see `AllowList.swift`) are accepted, each interpreted by this reader; every other
/// global is refused by name before anything else happens.
public enum TorchPickle {
    /// Structural limits against hostile files (defaults are far above any real checkpoint).
    public struct Limits: Sendable {
        /// Deepest container nesting (A1111 files nest 4–6 levels; Python's own limit is ~1000).
        public var maxNestingDepth: Int
        /// Most containers one file may create (each costs ~100 bytes while reading).
        public var maxContainers: Int
        /// Values the result may hold per opcode executed. Shared references (BINGET of a
        /// container) repeat a subtree in the result; this bounds "billion laughs" expansion.
        public var expansionFactor: Int
        /// Values the result may hold beyond `expansionFactor` × opcodes (legitimate sharing, such
        /// as one config dict referenced many times).
        public var expansionAllowance: Int

        public init(maxNestingDepth: Int = 100, maxContainers: Int = 10_000_000, expansionFactor: Int = 4,
                    expansionAllowance: Int = 1_000_000) {
            self.maxNestingDepth = maxNestingDepth
            self.maxContainers = maxContainers
            self.expansionFactor = expansionFactor
            self.expansionAllowance = expansionAllowance
        }
    }

    /// Most dimensions a tensor may have (torch's own limit is 64 too).
    public static let maxRank = 64

    /// Reads one standalone pickle from `bytes` (protocols 0–5) with the same allow-list as
    /// ``TorchFile``. Persistent ids (storages) are refused, so it holds no tensors. Bytes after
    /// STOP are an error.
    public static func parse(_ bytes: [UInt8], file: String = "<memory>",
                             limits: Limits = Limits()) throws(TorchPickleError) -> PickleValue {
        let arena = ObjectArena(limit: limits.maxContainers)
        defer { arena.tearDown() }
        var result: Result<PickleValue, TorchPickleError>!
        bytes.withUnsafeBytes { buffer in
            do throws(TorchPickleError) {
                let machine = Unpickler(bytes: buffer, file: file, stream: "pickle", limits: limits, arena: arena)
                let value = try machine.load()
                guard machine.position == buffer.count else {
                    throw TorchPickleError(file: file, rule: .trailingData(at: .init(stream: "pickle", offset: machine.position)))
                }
                var converter = Converter(file: file, limits: limits, locator: nil, opcodeCount: machine.opcodeCount)
                result = .success(try converter.convert(value))
            } catch {
                result = .failure(error)
            }
        }
        return try result.get()
    }
}
