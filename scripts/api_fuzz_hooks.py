"""schemathesis hooks of scripts/api-fuzz: SDP offers (application/sdp) go on the wire as text."""

import schemathesis

schemathesis.serializer.alias("application/sdp", "text/plain")
