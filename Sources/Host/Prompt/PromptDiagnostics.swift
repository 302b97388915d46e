/// Something in a prompt that works but probably is not what the user meant, for the CLI to
/// print. Each names the tag it is about, as written.
public struct PromptWarning: Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Equatable, Sendable {
        /// A LoRA weight outside the usual 0.5–1.2 (but within ±1.5).
        case unusualWeight
        /// A LoRA weight beyond ±1.5, where LoRAs tend to distort the image.
        case distortingWeight
        /// A tag type A1111 has no network for (it skips such tags, logging it).
        case unknownNetworkType
        /// Arguments A1111 reads past (positional beyond `name:te:unet:dyn`, unknown `key=`).
        case ignoredArguments
    }

    public let kind: Kind
    /// The tag as written (`<lora:x:1.8>`).
    public let tag: String
    /// What is wrong, without the tag.
    public let message: String

    public init(kind: Kind, tag: String, message: String) {
        self.kind = kind
        self.tag = tag
        self.message = message
    }

    /// `<tag>: message`.
    public var description: String { "\(tag): \(message)" }

    /// The usual range of LoRA weights (community guidance; A1111 accepts any number).
    public static let usualLoRAWeights: ClosedRange<Double> = 0.5...1.2
    /// Beyond this magnitude a LoRA tends to distort the image.
    public static let distortingLoRAWeight = 1.5

    /// The warning for one LoRA weight (`part`: nil when TE and UNet share it, else "text-encoder"
    /// or "UNet"), or nil for a usual weight.
    static func forLoRAWeight(_ weight: Double, part: String?, tag: String) -> PromptWarning? {
        let what = part.map { "\($0) weight" } ?? "weight"
        let shown = formatNumber(weight)
        if abs(weight) > distortingLoRAWeight {
            return PromptWarning(kind: .distortingWeight, tag: tag,
                                 message: "LoRA \(what) \(shown) is beyond ±1.5, which tends to distort the image")
        }
        if !usualLoRAWeights.contains(weight) {
            let effect = weight == 0 ? " (0 turns it off)" : ""
            return PromptWarning(kind: .unusualWeight, tag: tag,
                                 message: "LoRA \(what) \(shown) is unusual; LoRA weights are usually 0.5–1.2\(effect)")
        }
        return nil
    }
}

/// A tag whose arguments cannot be read; A1111 fails the tag's network type for the whole
/// generation on these (its `float()`/`int()` raise).
public struct PromptTagError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Reason: Equatable, Sendable {
        /// No network name: `<lora::1>`, or only `key=value` arguments (`<lora:te=1>`).
        case missingName
        /// `argument` (`"te"`, `"unet"`, `"dyn"`, `"strength"`) is `value`, which is not a number
        /// (`integer`: an integer was needed).
        case notANumber(argument: String, value: String, integer: Bool)
        /// A weight that Python reads as infinity or NaN (`inf`, `nan`, `1e999`): refused, since
        /// it would fill the model with non-finite values.
        case notFinite(argument: String, value: String)
        /// `dyn` below 1 (it is the number of ranks kept).
        case rankBelowOne(value: Int)
    }

    /// The tag as written.
    public let tag: String
    public let reason: Reason

    public init(tag: String, reason: Reason) {
        self.tag = tag
        self.reason = reason
    }

    public var description: String {
        switch reason {
        case .missingName:
            return "\(tag): no network name (expected <type:NAME:…>)"
        case let .notANumber(argument, value, integer):
            return "\(tag): \(argument) \(value.debugDescription) is not \(integer ? "an integer" : "a number")"
        case let .notFinite(argument, value):
            return "\(tag): \(argument) \(value.debugDescription) is not a finite number"
        case .rankBelowOne(let value):
            return "\(tag): dyn \(value) must be at least 1 (the number of ranks to keep)"
        }
    }
}

/// `1`, `0.8`, `-2.5`: the shortest text that reads back as `value`.
func formatNumber(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : "\(value)"
}
