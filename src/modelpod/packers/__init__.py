"""From a framework's model to a verified package: one ``pack_<platform>`` per framework, all
through the one pack-and-verify flow (:mod:`modelpod.packers.flow`)."""
