import Foundation
import Host

/// A1111's generation parameters text (`processing.create_infotext`), stored in a PNG's
/// `parameters` text chunk and read back by A1111's "PNG Info", civitai and most tools.
///
/// Layout: the prompt as written (extra-network tags included), then
/// `\nNegative prompt: …` when there is one, then `\n` and the fields joined by ", " in
/// A1111's order, each `Key: value`, a value quoted as JSON (`json.dumps`, non-ASCII kept) when
/// it holds ',', ':' or a newline (`infotext_utils.quote`). Fields without a value are left out.
public struct Infotext: Equatable, Sendable {
    public var prompt: String
    public var negativePrompt: String
    /// (key, value) in order; values already rendered as text.
    public var fields: [(key: String, value: String)]

    public static func == (a: Infotext, b: Infotext) -> Bool {
        a.prompt == b.prompt && a.negativePrompt == b.negativePrompt
            && a.fields.map(\.key) == b.fields.map(\.key) && a.fields.map(\.value) == b.fields.map(\.value)
    }

    public init(prompt: String, negativePrompt: String, fields: [(key: String, value: String)]) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.fields = fields
    }

    /// The text, as `create_infotext` returns it (stripped of surrounding whitespace).
    public var text: String {
        let parameters = fields.map { $0.key == $0.value ? $0.key : "\($0.key): \(Self.quote($0.value))" }
            .joined(separator: ", ")
        let negative = negativePrompt.isEmpty ? "" : "\nNegative prompt: \(negativePrompt)"
        return "\(prompt)\(negative)\n\(parameters)".trimmingCharacters(in: .pythonWhitespace)
    }

    /// `infotext_utils.quote`: the text, or its JSON string form when it holds ',', '\n' or ':'.
    public static func quote(_ text: String) -> String {
        guard text.contains(",") || text.contains("\n") || text.contains(":") else { return text }
        return jsonString(text)
    }

    /// `json.dumps(text, ensure_ascii=False)`.
    static func jsonString(_ text: String) -> String { PythonJSON.string(text, ensureASCII: false) }

    /// A number as Python prints what A1111's UI hands it: integral values without a fraction
    /// (the UI's JSON gives ints for them: "CFG scale: 7"), others in shortest round-trip form
    /// ("7.5", "0.1").
    public static func number(_ value: Double) -> String {
        if value.isFinite, value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }
}

extension CharacterSet {
    /// What Python's `str.strip()` removes (whitespace and the separators U+001C...U+001F).
    static let pythonWhitespace: CharacterSet = {
        var set = CharacterSet.whitespacesAndNewlines
        set.insert(charactersIn: "\u{1C}\u{1D}\u{1E}\u{1F}")
        return set
    }()
}

/// The settings of one txt2img generation that its infotext records.
public struct InfotextSettings: Sendable {
    public var prompt: String
    public var negativePrompt: String
    public var steps: Int
    public var sampler: A1111Sampler
    public var cfgScale: Double
    public var seed: UInt64
    public var width: Int
    public var height: Int
    /// First 10 hex digits of the checkpoint file's SHA-256 (nil: not a single file).
    public var modelHash: String?
    /// The checkpoint's name (file stem).
    public var modelName: String?
    public var clipSkip: Int
    public var etaNoiseSeedDelta: UInt64
    /// (name as mentioned, short hash) per LoRA, in prompt order.
    public var loraHashes: [(name: String, hash: String)]
    /// (embedding name, short hash) per embedding used: the prompt's, then the negative
    /// prompt's (A1111 lists an embedding used by both twice).
    public var textualInversionHashes: [(name: String, hash: String)]
    /// "Version" (A1111 writes its git tag).
    public var version: String?

    public init(prompt: String, negativePrompt: String, steps: Int, sampler: A1111Sampler, cfgScale: Double,
                seed: UInt64, width: Int, height: Int, modelHash: String?, modelName: String?, clipSkip: Int = 1,
                etaNoiseSeedDelta: UInt64 = 0, loraHashes: [(name: String, hash: String)] = [],
                textualInversionHashes: [(name: String, hash: String)] = [], version: String? = nil) {
        self.prompt = prompt
        self.negativePrompt = negativePrompt
        self.steps = steps
        self.sampler = sampler
        self.cfgScale = cfgScale
        self.seed = seed
        self.width = width
        self.height = height
        self.modelHash = modelHash
        self.modelName = modelName
        self.clipSkip = clipSkip
        self.etaNoiseSeedDelta = etaNoiseSeedDelta
        self.loraHashes = loraHashes
        self.textualInversionHashes = textualInversionHashes
        self.version = version
    }

    /// The infotext A1111 (webui 1.9 and later) writes for these settings with its default
    /// options and "Random number generator source: CPU": Steps, Sampler, Schedule type, CFG
    /// scale, Seed, Size, Model hash, Model, Clip skip (when > 1), ENSD (ancestral samplers,
    /// when set), RNG, Lora hashes (set when the LoRA network activates), TI hashes (set while
    /// the prompts are encoded, after that), Version. Hypernetworks leave no field (webui 1.x:
    /// their `<hypernet:…>` tags stay in the prompt text, as all tags do).
    ///
    /// Since webui 1.9 the sampler and the schedule are separate fields: "DPM++ 2M Karras" is
    /// written "Sampler: DPM++ 2M, Schedule type: Karras"; the others use schedule "Automatic".
    public var infotext: Infotext {
        var fields: [(key: String, value: String)] = []
        let (samplerName, schedule) = sampler.infotextNames
        fields.append(("Steps", String(steps)))
        fields.append(("Sampler", samplerName))
        fields.append(("Schedule type", schedule))
        fields.append(("CFG scale", Infotext.number(cfgScale)))
        fields.append(("Seed", String(seed)))
        fields.append(("Size", "\(width)x\(height)"))
        if let modelHash { fields.append(("Model hash", modelHash)) }
        if let modelName { fields.append(("Model", modelName)) }
        if clipSkip > 1 { fields.append(("Clip skip", String(clipSkip))) }
        // A1111 records ENSD only for samplers that draw noise while sampling.
        if etaNoiseSeedDelta != 0 && sampler == .eulerAncestral { fields.append(("ENSD", String(etaNoiseSeedDelta))) }
        fields.append(("RNG", "CPU"))
        if !loraHashes.isEmpty {
            // `mentioned_name.translate(remove ":" and ",")`.
            let list = loraHashes.map { entry in
                "\(entry.name.filter { $0 != ":" && $0 != "," }): \(entry.hash)"
            }
            fields.append(("Lora hashes", list.joined(separator: ", ")))
        }
        if !textualInversionHashes.isEmpty {
            let list = textualInversionHashes.map { "\($0.name.filter { $0 != ":" && $0 != "," }): \($0.hash)" }
            fields.append(("TI hashes", list.joined(separator: ", ")))
        }
        if let version { fields.append(("Version", version)) }
        return Infotext(prompt: prompt, negativePrompt: negativePrompt, fields: fields)
    }
}

extension A1111Sampler {
    /// (Sampler, Schedule type) as webui 1.9+ writes them.
    public var infotextNames: (sampler: String, schedule: String) {
        switch self {
        case .dpmpp2MKarras: return ("DPM++ 2M", "Karras")
        default: return (rawValue, "Automatic")
        }
    }
}
