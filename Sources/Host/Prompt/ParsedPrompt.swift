/// An extra network a prompt asks for, with its arguments read as A1111 reads them.
public enum ExtraNetwork: Equatable, Sendable {
    /// `<lora:NAME[:TE[:UNET[:DYN]]]>` with named `te=`, `unet=`, `dyn=`; `<lyco:…>` is the same
    /// (A1111 registers `lyco` as an alias of its LoRA network). `te` defaults to 1, `unet` to
    /// `te`, `dynRank` to nil (all ranks).
    case lora(name: String, te: Double, unet: Double, dynRank: Int?)
    /// `<hypernet:NAME[:STRENGTH]>`, strength defaulting to 1.
    case hypernet(name: String, strength: Double)
    /// A tag type A1111 has no network for; kept (with a warning) so callers can report it.
    case other(type: String, arguments: [String])

    /// The network's name (nil for `.other`).
    public var name: String? {
        switch self {
        case .lora(let name, _, _, _), .hypernet(let name, _): return name
        case .other: return nil
        }
    }
}

/// A prompt with its extra-network tags read: the text the text encoder sees, the networks in
/// order of appearance, and warnings.
public struct ParsedPrompt: Equatable, Sendable {
    /// The prompt with every tag removed (`A1111Prompt.removeTags`).
    public var text: String
    /// The networks, in order of appearance.
    public var networks: [ExtraNetwork]
    /// The tag each network came from (`tags[i]` wrote `networks[i]`).
    public var tags: [A1111Prompt.Tag]
    /// Unusual weights, unknown tag types, ignored arguments.
    public var warnings: [PromptWarning]

    public init(text: String, networks: [ExtraNetwork], tags: [A1111Prompt.Tag], warnings: [PromptWarning]) {
        self.text = text
        self.networks = networks
        self.tags = tags
        self.warnings = warnings
    }

    /// The LoRA networks in the order A1111 applies them. A1111 groups tags by type in order of
    /// each type's first appearance and hands the `lora` and `lyco` groups to one network, so
    /// `<lora:a><lyco:b><lora:c>` applies a, c, b. The order matters only for modules whose
    /// delta depends on the weight (DoRA, IA3, OFT, …); plain LoRA stacks commute.
    public var lorasInA1111Order: [ExtraNetwork] {
        var typeOrder: [String] = []
        for tag in tags where !typeOrder.contains(tag.type) { typeOrder.append(tag.type) }
        return typeOrder.flatMap { type in
            zip(tags, networks).filter { tag, network in
                guard tag.type == type, case .lora = network else { return false }
                return true
            }.map(\.1)
        }
    }

    /// The hypernetworks, in order (A1111 applies them in this order, each on the previous one's output).
    public var hypernetworks: [ExtraNetwork] {
        networks.filter { if case .hypernet = $0 { return true } else { return false } }
    }
}

extension A1111Prompt {
    /// The tag types that mean LoRA (A1111's `lora` network and its `lyco` alias).
    public static let loraTypes: Set<String> = ["lora", "lyco"]
    /// The hypernetwork tag type.
    public static let hypernetType = "hypernet"

    /// Reads `prompt`'s extra-network tags as A1111 does (its `extra_networks_lora.py` and
    /// `extra_networks_hypernet.py`) and removes them from the text (`removeTags`).
    ///
    /// LoRA (`lora`, `lyco`): the name is the first positional argument; `te` is the second
    /// positional (default 1), then `te=` overrides it; `unet` is the third positional (default:
    /// `te` as finally read), then `unet=`; `dyn` the fourth positional, then `dyn=`. Positional
    /// and named forms mix freely (`<lora:x:0.8:unet=0.3>`). Numbers are read as Python's
    /// `float()`/`int()` do (`" 0.8"`, `"1_0"`, `"٠.٥"` are numbers); a positional argument
    /// that is not a number fails even when a named one would override it, as in A1111.
    /// Hypernetworks: `<hypernet:NAME[:STRENGTH]>` from the raw arguments (so `name=x` is a name).
    /// Other types become `.other` with a warning (A1111 skips them).
    ///
    /// Positive prompts only: A1111 reads tags from the prompt (`parse_extra_network_prompts`
    /// runs on `p.prompts`), never from the negative prompt, whose tags stay in its text and
    /// are tokenized as words.
    ///
    /// Throws `PromptTagError` naming the first tag that cannot be read. Where A1111 goes
    /// further than this reading: it fails the whole `lora` group on one bad tag (the host fails
    /// the prompt), and accepts non-finite weights (the host refuses them).
    public static func parse(_ prompt: String) throws -> ParsedPrompt {
        let (text, tags) = removeTags(from: prompt)
        var networks: [ExtraNetwork] = []
        var warnings: [PromptWarning] = []
        for tag in tags {
            let (network, tagWarnings) = try read(tag)
            networks.append(network)
            warnings += tagWarnings
        }
        return ParsedPrompt(text: text, networks: networks, tags: tags, warnings: warnings)
    }

    /// One tag's network and warnings.
    static func read(_ tag: Tag) throws -> (ExtraNetwork, [PromptWarning]) {
        if loraTypes.contains(tag.type) { return try readLoRA(tag) }
        if tag.type == hypernetType { return try readHypernet(tag) }
        var message = "unknown extra network type '\(tag.type)'; A1111 skips it"
        let known = loraTypes.union([hypernetType])
        if known.contains(tag.type.lowercased()) { message += " (types are case-sensitive: did you mean '\(tag.type.lowercased())'?)" }
        return (.other(type: tag.type, arguments: tag.arguments),
                [PromptWarning(kind: .unknownNetworkType, tag: tag.description, message: message)])
    }

    private static func readLoRA(_ tag: Tag) throws -> (ExtraNetwork, [PromptWarning]) {
        let written = tag.description
        let positional = tag.positional, named = tag.named
        guard let name = positional.first, !name.isEmpty else {
            throw PromptTagError(tag: written, reason: .missingName)
        }
        func weight(_ text: String, _ argument: String) throws -> Double {
            guard let value = PythonText.float(text) else {
                throw PromptTagError(tag: written, reason: .notANumber(argument: argument, value: text, integer: false))
            }
            guard value.isFinite else { throw PromptTagError(tag: written, reason: .notFinite(argument: argument, value: text)) }
            return value
        }
        func rank(_ text: String) throws -> Int {
            guard let value = PythonText.int(text) else {
                throw PromptTagError(tag: written, reason: .notANumber(argument: "dyn", value: text, integer: true))
            }
            guard value >= 1 else { throw PromptTagError(tag: written, reason: .rankBelowOne(value: value)) }
            return value
        }
        // The order of evaluation is A1111's, so the same argument fails first.
        var te = positional.count > 1 ? try weight(positional[1], "te") : 1.0
        if let text = named["te"] { te = try weight(text, "te") }
        var unet = positional.count > 2 ? try weight(positional[2], "unet") : te
        if let text = named["unet"] { unet = try weight(text, "unet") }
        var dyn = positional.count > 3 ? try rank(positional[3]) : nil
        if let text = named["dyn"] { dyn = try rank(text) }

        var warnings: [PromptWarning] = []
        if te == unet {
            if let w = PromptWarning.forLoRAWeight(te, part: nil, tag: written) { warnings.append(w) }
        } else {
            if let w = PromptWarning.forLoRAWeight(te, part: "text-encoder", tag: written) { warnings.append(w) }
            if let w = PromptWarning.forLoRAWeight(unet, part: "UNet", tag: written) { warnings.append(w) }
        }
        var ignored = positional.dropFirst(4).map { $0.debugDescription }
        ignored += tag.namedPairs.filter { !["te", "unet", "dyn"].contains($0.key) }.map { "\($0.key)=\($0.value)".debugDescription }
        if !ignored.isEmpty {
            warnings.append(PromptWarning(kind: .ignoredArguments, tag: written,
                message: "ignored arguments \(ignored.joined(separator: ", ")) (LoRA takes NAME:TE:UNET:DYN and te=, unet=, dyn=)"))
        }
        return (.lora(name: name, te: te, unet: unet, dynRank: dyn), warnings)
    }

    private static func readHypernet(_ tag: Tag) throws -> (ExtraNetwork, [PromptWarning]) {
        let written = tag.description
        // A1111 reads `items`, not `positional`: every argument counts by position.
        guard let name = tag.arguments.first, !name.isEmpty else { throw PromptTagError(tag: written, reason: .missingName) }
        var strength = 1.0
        if tag.arguments.count > 1 {
            let text = tag.arguments[1]
            guard let value = PythonText.float(text) else {
                throw PromptTagError(tag: written, reason: .notANumber(argument: "strength", value: text, integer: false))
            }
            guard value.isFinite else { throw PromptTagError(tag: written, reason: .notFinite(argument: "strength", value: text)) }
            strength = value
        }
        var warnings: [PromptWarning] = []
        if tag.arguments.count > 2 {
            let ignored = tag.arguments.dropFirst(2).map { $0.debugDescription }.joined(separator: ", ")
            warnings.append(PromptWarning(kind: .ignoredArguments, tag: written,
                message: "ignored arguments \(ignored) (hypernet takes NAME:STRENGTH)"))
        }
        return (.hypernet(name: name, strength: strength), warnings)
    }
}
