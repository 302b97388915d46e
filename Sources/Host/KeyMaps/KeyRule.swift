/// How a tensor changes between the single-file and the diffusers naming.
public enum KeyTransform: Hashable, Sendable {
    /// Same tensor.
    case identity
    /// Part `index` of `count` equal row blocks of the single-file tensor (OpenCLIP's fused
    /// `in_proj_weight`/`in_proj_bias` hold q, k, v stacked on dim 0; diffusers splits them).
    case fusedRows(index: Int, count: Int)
    /// A single-file 1×1 convolution weight [O, I, 1, 1] that diffusers stores as a linear
    /// weight [O, I] (the VAE's mid-block attention q/k/v/proj_out).
    case conv1x1
    /// Stored transposed in the single file (OpenCLIP `text_projection` [width, proj] is a
    /// diffusers `Linear` weight [proj, width]).
    case transpose
}

/// One renaming rule between single-file and diffusers key paths.
///
/// A pattern ending in "." is a prefix (the rest of the key is renamed by `inner`, or kept);
/// any other pattern must match the whole (remaining) key. `#` in a pattern matches a
/// decimal number; the numbers are carried over, in order, to the other side's `#`s.
/// Several diffusers patterns mean one single-file tensor holds several diffusers tensors,
/// stacked by rows in that order (``KeyTransform/fusedRows(index:count:)``).
struct KeyRule: Sendable {
    let single: String
    let diffusers: [String]
    /// Renames of the rest of the key after a prefix match.
    let inner: [KeyRule]
    /// When true, a rest that no inner rule renames makes the key unknown; when false, the
    /// rest is kept as it is.
    let innerRequired: Bool
    /// Applied to the weight the rule names: for a whole-key rule always, for a prefix rule
    /// when the rest is `weight` (biases and norms keep their shape).
    let weightTransform: KeyTransform

    init(_ single: String, _ diffusers: String, inner: [KeyRule] = [], innerRequired: Bool = false,
         weightTransform: KeyTransform = .identity) {
        self.init(single, fused: [diffusers], inner: inner, innerRequired: innerRequired,
                  weightTransform: weightTransform)
    }

    init(_ single: String, fused diffusers: [String], inner: [KeyRule] = [], innerRequired: Bool = false,
         weightTransform: KeyTransform = .identity) {
        self.single = single
        self.diffusers = diffusers
        self.inner = inner
        self.innerRequired = innerRequired
        self.weightTransform = weightTransform
    }
}

/// A rule list indexed by the first path segment of each side's patterns, so a key is only
/// tried against the rules that can match it (a real UNet map has ~100 block templates).
struct KeyRuleTable: Sendable {
    let rules: [KeyRule]
    private let bySingleHead: [Substring: [KeyRule]]
    private let byDiffusersHead: [Substring: [KeyRule]]

    init(_ rules: [KeyRule]) {
        self.rules = rules
        var single: [Substring: [KeyRule]] = [:], diffusers: [Substring: [KeyRule]] = [:]
        for rule in rules {
            single[Self.head(rule.single[...]), default: []].append(rule)
            for head in Set(rule.diffusers.map { Self.head($0[...]) }) { diffusers[head, default: []].append(rule) }
        }
        bySingleHead = single
        byDiffusersHead = diffusers
    }

    /// The rules that can match `key` in `direction`.
    func candidates(for key: Substring, direction: KeyDirection) -> [KeyRule] {
        // A pattern's head never holds '#' (checked by the table tests), so heads compare exactly.
        (direction == .toDiffusers ? bySingleHead : byDiffusersHead)[Self.head(key)] ?? []
    }

    /// Text up to the first ".", or all of it.
    static func head(_ text: Substring) -> Substring {
        text.firstIndex(of: ".").map { text[..<$0] } ?? text
    }
}

/// Which way a key is renamed.
enum KeyDirection {
    case toDiffusers
    case toSingleFile
}

/// Applies rule tables. The rule with the longest match wins, so tables may hold a general
/// prefix and a more specific one side by side (`output_blocks.2.1.` vs `output_blocks.2.1.conv.`).
enum KeyRuleEngine {
    /// The key(s) `key` becomes under `table` (several for a fused single-file tensor), or
    /// empty when no rule knows it.
    static func rename(_ key: Substring, table: KeyRuleTable, direction: KeyDirection) -> [KeyConversion] {
        rename(key, rules: table.candidates(for: key, direction: direction), direction: direction)
    }

    /// The same over a plain list (inner tables are a handful of rules).
    static func rename(_ key: Substring, rules: [KeyRule], direction: KeyDirection) -> [KeyConversion] {
        var best: (rule: KeyRule, fusedIndex: Int, numbers: [Substring], rest: Substring, length: Int)?
        for rule in rules {
            let patterns = direction == .toDiffusers ? [rule.single] : rule.diffusers
            for (index, pattern) in patterns.enumerated() {
                guard let match = match(pattern, in: key) else { continue }
                let length = key.utf8.count - match.rest.utf8.count
                if best == nil || length > best!.length {
                    best = (rule, index, match.numbers, match.rest, length)
                }
            }
        }
        guard let (rule, fusedIndex, numbers, rest, _) = best else { return [] }
        let isWhole = !(direction == .toDiffusers ? rule.single : rule.diffusers[fusedIndex]).hasSuffix(".")

        // The rest, renamed by the inner table when there is one.
        var renamedRests: [KeyConversion] = [KeyConversion(key: String(rest), transform: .identity)]
        if !isWhole && !rule.inner.isEmpty {
            let inner = rename(rest, rules: rule.inner, direction: direction)
            if inner.isEmpty {
                if rule.innerRequired { return [] }
            } else {
                renamedRests = inner
            }
        }

        let targets: [String]
        switch direction {
        case .toDiffusers: targets = rule.diffusers
        case .toSingleFile: targets = [rule.single]
        }
        var result: [KeyConversion] = []
        for (targetIndex, target) in targets.enumerated() {
            let head = substitute(numbers, into: target)
            for renamed in renamedRests {
                var transform = renamed.transform
                let appliesToWeight = isWhole || renamed.key == "weight"
                if transform == .identity && appliesToWeight {
                    transform = rule.weightTransform
                }
                if rule.diffusers.count > 1 {
                    // A fused tensor: which row block this diffusers tensor is.
                    transform = .fusedRows(index: direction == .toDiffusers ? targetIndex : fusedIndex,
                                           count: rule.diffusers.count)
                }
                result.append(KeyConversion(key: head + renamed.key, transform: transform))
            }
        }
        return result
    }

    /// Matches `pattern` at the start of `key` (the whole key for a pattern without a final
    /// "."); returns the numbers `#` matched and the rest. Works on UTF-8 bytes: keys and
    /// patterns are ASCII paths, and byte compares keep indexing of large models fast.
    static func match(_ pattern: String, in key: Substring) -> (numbers: [Substring], rest: Substring)? {
        var numbers: [Substring] = []
        let bytes = key.utf8
        var k = bytes.startIndex
        let hash = UInt8(ascii: "#"), zero = UInt8(ascii: "0"), nine = UInt8(ascii: "9")
        for p in pattern.utf8 {
            if p == hash {
                let start = k
                while k < bytes.endIndex, bytes[k] >= zero, bytes[k] <= nine { k = bytes.index(after: k) }
                if k == start { return nil }
                numbers.append(key[start..<k])
            } else {
                guard k < bytes.endIndex, bytes[k] == p else { return nil }
                k = bytes.index(after: k)
            }
        }
        let rest = key[k...]
        if pattern.utf8.last != UInt8(ascii: ".") && !rest.isEmpty { return nil }
        return (numbers, rest)
    }

    /// `pattern` with its `#`s replaced by `numbers` in order.
    static func substitute(_ numbers: [Substring], into pattern: String) -> String {
        guard pattern.contains("#") else { return pattern }
        var out = ""
        var next = numbers.makeIterator()
        for ch in pattern {
            if ch == "#", let n = next.next() { out += n } else { out.append(ch) }
        }
        return out
    }
}
