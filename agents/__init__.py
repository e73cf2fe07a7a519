"""The endpoint agent (one per PC), the MDM bridge for mobiles and the fleet simulator.

Light by design: nothing here may import faust, scikit-learn, numpy or pandas
(``tests/unit/test_agent_imports.py`` enforces it).
"""
