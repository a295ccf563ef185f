import FoundationEssentials

/// A group of settings (`PretrainConfig`, `GridConfig`, `AugmentConfig`): each setting is
/// spelled once, as a property with its default. Its JSON name is the property's name in
/// snake_case. Reading JSON lays the given object over the encoding of the defaults and
/// decodes the result whole, so a missing key keeps its default and an unknown one is an error
/// naming it. Python's `ace.PretrainConfig` takes its defaults from `Settings.defaultsJSON`.
public protocol Settings: Codable {
    init()
}

extension Settings {
    /// The settings as JSON: snake_case keys, sorted, so equal settings give equal bytes.
    public var json: String {
        String(decoding: (try? settingsEncoder().encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }

    /// The defaults as JSON.
    public static var defaultsJSON: String { Self().json }

    /// Settings from a JSON object of any of their keys (nested groups as objects).
    public init(json: String, what: String) throws {
        guard case .object(let given)? = try? JSONDecoder().decode(JSONValue.self, from: Data(json.utf8)) else {
            throw ACEError("invalid \(what) config JSON: expected an object of settings")
        }
        guard case .object(let defaults) = try JSONDecoder().decode(JSONValue.self,
                                                                    from: settingsEncoder().encode(Self())) else {
            throw ACEError("the \(what) defaults do not encode as an object")
        }
        func decode(_ object: [String: JSONValue]) throws -> Self {
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            return try decoder.decode(Self.self, from: try JSONEncoder().encode(JSONValue.object(object)))
        }
        do {
            self = try decode(try overlay(given, on: defaults, path: ""))
        } catch let error as DecodingError {
            // Some decoders report a number of the wrong kind (1.5 for an integer) without its
            // key: find the key by trying each given setting alone.
            let culprit = given.keys.sorted().first { key in
                (try? decode(try overlay([key: given[key]!], on: defaults, path: ""))) == nil
            }
            throw ACEError("invalid \(what) config: " + (culprit.map {
                "setting '\($0)' has the wrong type or value: \(given[$0]!)"
            } ?? describe(error)))
        }
    }
}

private func settingsEncoder() -> JSONEncoder {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    encoder.keyEncodingStrategy = .convertToSnakeCase
    return encoder
}

/// `given` over `defaults`, recursively for nested groups; a key the defaults lack is unknown.
private func overlay(_ given: [String: JSONValue], on defaults: [String: JSONValue],
                     path: String) throws -> [String: JSONValue] {
    var merged = defaults
    for (key, value) in given {
        guard let fallback = defaults[key] else {
            throw ACEError("unknown setting '\(path)\(key)'; known: \(defaults.keys.sorted().joined(separator: ", "))")
        }
        if case .object(let nested) = fallback {
            guard case .object(let nestedGiven) = value else {
                throw ACEError("setting '\(path)\(key)' must be an object of its settings")
            }
            merged[key] = .object(try overlay(nestedGiven, on: nested, path: "\(path)\(key)."))
        } else {
            merged[key] = value
        }
    }
    return merged
}

/// Any JSON value, to lay one object of settings over another without a schema. Integers stay
/// integers, so an integer setting given as 1.5 is still refused.
private enum JSONValue: Codable, CustomStringConvertible {
    case null, bool(Bool), int(Int), double(Double), string(String)
    indirect case array([JSONValue]), object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    var description: String {
        (try? JSONEncoder().encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "?"
    }
}
