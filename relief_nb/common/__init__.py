"""Foundation: where files live and how a name becomes a path (:mod:`.paths`), one-line checks of user input
(:mod:`.validation`), the version. Imports nothing else of relief_nb; every layer may import it."""
