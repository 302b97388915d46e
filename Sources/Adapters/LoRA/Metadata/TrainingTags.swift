/// The training tags of a kohya LoRA, counted as A1111's LoRA card shows them
/// (extensions-builtin/Lora/ui_edit_user_metadata.py, `build_tags`):
///
/// 1. `ss_tag_frequency` is `{dataset folder: {tag: count}}`; every tag is stripped of
///    surrounding whitespace and its counts are summed over the folders (`int(count)`);
/// 2. when the tags look like sentences rather than comma-separated tags (their mean length in
///    characters is at least 16), each is split into words (`[-_\w']+`), words shorter than 3
///    characters are dropped, and the words are counted instead (a word gets its tag's count);
/// 3. tags are sorted by count, descending; ties keep first-seen order (Python's stable sort).
///
/// The first few are what users type to trigger the LoRA.
public enum TrainingTags {
    /// `(tag, count)` in A1111's order, or empty when the metadata has no readable tag frequency.
    public static func ranked(metadata: [String: String]) -> [(tag: String, count: Int)] {
        guard let text = metadata["ss_tag_frequency"], let folders = OrderedJSON.parse(text)?.members else { return [] }
        var order: [String] = []
        var counts: [String: Int] = [:]
        func add(_ tag: String, _ count: Int) {
            if counts[tag] == nil { order.append(tag) }
            counts[tag, default: 0] += count
        }
        for (_, tags) in folders {
            for (tag, count) in tags.members ?? [] {
                // Python's int(): floats truncate toward zero; anything else has no count.
                guard let n = count.numberValue, n.isFinite else { continue }
                add(pythonStrip(tag), Int(n.rounded(.towardZero)))
            }
        }
        if !order.isEmpty {
            let meanLength = Double(order.reduce(0) { $0 + $1.unicodeScalars.count }) / Double(order.count)
            if meanLength >= 16 {
                let sentences = order.map { ($0, counts[$0]!) }
                order = []
                counts = [:]
                for (text, count) in sentences {
                    for word in words(text) where word.unicodeScalars.count >= 3 { add(word, count) }
                }
            }
        }
        // Stable: sort the first-seen positions by count.
        let ranked = order.enumerated().sorted { a, b in
            let ca = counts[a.element]!, cb = counts[b.element]!
            return ca != cb ? ca > cb : a.offset < b.offset
        }
        return ranked.map { ($0.element, counts[$0.element]!) }
    }

    /// The `limit` most frequent tags: the LoRA's likely trigger words.
    public static func triggerWords(metadata: [String: String], limit: Int = 10) -> [String] {
        Array(ranked(metadata: metadata).prefix(limit).map(\.tag))
    }

    /// Python's `re.findall(r"[-_\w']+", text)`: runs of word characters (Unicode letters and
    /// digits, `_`), `-` and `'`.
    static func words(_ text: String) -> [String] {
        var out: [String] = []
        var current = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if isWordScalar(scalar) {
                current.append(scalar)
            } else if !current.isEmpty {
                out.append(String(current))
                current = String.UnicodeScalarView()
            }
        }
        if !current.isEmpty { out.append(String(current)) }
        return out
    }

    /// Python's Unicode `\w` (alphanumeric or `_`), plus `-` and `'`.
    static func isWordScalar(_ s: Unicode.Scalar) -> Bool {
        if s == "_" || s == "-" || s == "'" { return true }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
             .decimalNumber, .letterNumber, .otherNumber:
            return true
        default:
            return s.properties.numericType != nil
        }
    }

    /// Python's `str.strip()`: removes Unicode whitespace at both ends.
    static func pythonStrip(_ s: String) -> String {
        let scalars = Array(s.unicodeScalars)
        func isSpace(_ c: Unicode.Scalar) -> Bool {
            c.properties.isWhitespace || (0x1C...0x1F).contains(c.value)
        }
        guard let first = scalars.firstIndex(where: { !isSpace($0) }),
              let last = scalars.lastIndex(where: { !isSpace($0) }) else { return "" }
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars[first...last])
        return String(view)
    }
}
