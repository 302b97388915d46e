/// The A1111 samplers this runtime implements, by their UI names, and the σ schedule each uses
/// with the schedule type "Automatic".
public enum A1111Sampler: String, CaseIterable, Sendable {
    case euler = "Euler"
    case eulerAncestral = "Euler a"
    case dpmpp2M = "DPM++ 2M"
    case dpmpp2MKarras = "DPM++ 2M Karras"
    case ddim = "DDIM"

    /// The sampler for an A1111 name or alias (`k_euler_a`, `k_dpmpp_2m_ka`, …), or nil.
    public init?(a1111Name name: String) {
        let aliases: [String: A1111Sampler] = [
            "k_euler": .euler, "k_euler_a": .eulerAncestral, "k_euler_ancestral": .eulerAncestral,
            "k_dpmpp_2m": .dpmpp2M, "k_dpmpp_2m_ka": .dpmpp2MKarras, "ddim": .ddim,
        ]
        if let sampler = A1111Sampler(rawValue: name) ?? aliases[name] { self = sampler } else { return nil }
    }

    /// True for samplers over σ (k-diffusion); DDIM works on integer timesteps instead.
    public var usesSigmas: Bool { self != .ddim }

    /// The σ list for `steps` with schedule type "Automatic": Karras for "… Karras", else
    /// k-diffusion's `get_sigmas`. Nil for DDIM (see `A1111DDIM.timesteps`).
    public func sigmas(steps: Int, schedule: DiscreteSchedule = .stableDiffusion) -> [Float]? {
        switch self {
        case .euler, .eulerAncestral, .dpmpp2M: return schedule.uniformSigmas(steps: steps)
        case .dpmpp2MKarras: return schedule.karrasSigmas(steps: steps)
        case .ddim: return nil
        }
    }
}
