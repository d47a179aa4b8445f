"""Sans-IO SIP: messages, transactions, dialogs, SDP, digest auth. No sockets, no clocks here."""
