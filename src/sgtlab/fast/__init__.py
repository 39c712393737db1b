"""Fast paths: code that computes what a plain definition elsewhere computes, faster, for the
models it can handle. Each decides on its own whether a model is eligible (`eligibility`) and the
caller falls back to the plain path otherwise; each is tested against that plain path."""
